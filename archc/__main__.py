"""``python -m archc``: the ``archc`` command (so ``torchrun ... -m archc search`` works too)."""
from archc.cli.main import main

if __name__ == "__main__":
    main()
