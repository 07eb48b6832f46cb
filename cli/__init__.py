"""archc command-line interface (installed as ``archc.cli``; entry point ``archc``)."""
