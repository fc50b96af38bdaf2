"""Shipped LightningCLI and platform configs, installed as `mohaq.configs`."""
