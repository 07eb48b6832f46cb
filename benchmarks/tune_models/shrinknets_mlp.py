"""ShrinkNets §3.2's MLP on MNIST, as an ``archc tune`` model file: 784-500-500-500-10 (ReLU),
the upper bound the paper's random search started from; archc gates every hidden unit.

Reproduce the paper's random search (λ = 10^-U(2,5), Adam lr 1e-3, batch 256, best validation
epoch measured on the test set; see benchmarks/README.md):

    archc tune benchmarks/tune_models/shrinknets_mlp.py --sampler random --lam-range 1e-5,1e-2 \
        --lr-range 1e-3 --pick best --epochs 100 --trials 20 --workers 2 --out runs/tune_shrinknets_mlp
"""
from _mnist_task import authors_init, test_loader, train_val
from mnist_mlp_lenet import MLP


def model():
    return authors_init(MLP((500, 500, 500)))


def data():
    return train_val()


def test_data():
    return test_loader()
