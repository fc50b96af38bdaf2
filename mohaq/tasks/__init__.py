"""Shipped tasks beyond TIMIT, written as a user would write them: plain torch
layers in a LightningModule, made quantizable by :mod:`mohaq.convert`."""
