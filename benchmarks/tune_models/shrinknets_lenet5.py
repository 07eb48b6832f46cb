"""ShrinkNets §3.2's LeNet-5 on MNIST, as an ``archc tune`` model file: conv5(1->50)-pool-
conv5(50->50)-pool-fc(800->5000)-fc(5000->10), no padding: the paper's upper bound of 50/50/5000
channels/units; archc gates every channel and hidden unit.

    archc tune benchmarks/tune_models/shrinknets_lenet5.py --sampler random --lam-range 1e-5,1e-2 \
        --lr-range 1e-3 --pick best --epochs 200 --trials 20 --out runs/tune_shrinknets_lenet5
"""
from _mnist_task import authors_init, test_loader, train_val
from mnist_mlp_lenet import LeNet5


def model():
    return authors_init(LeNet5(50, 50, 5000))


def data():
    return train_val()


def test_data():
    return test_loader()
