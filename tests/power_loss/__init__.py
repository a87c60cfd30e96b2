"""Power loss, tested as file-system researchers test it (see ``tests/test_power_loss.py``)."""
