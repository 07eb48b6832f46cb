"""``python -m archc``: the ``archc`` command (so ``torchrun ... -m archc search`` works too)."""
from archc.cli import run

if __name__ == "__main__":
    run()
