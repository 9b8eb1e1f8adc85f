"""Development-only training pipeline for the farm models (needs the ``train`` extra, never the device)."""
