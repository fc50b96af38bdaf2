"""Installs the MOHAQ toolkit.

`callbacks/` and `datamodules/` live at the top of the repository (the design
card's layout) but install as `mohaq.callbacks` and `mohaq.datamodules`, so
nothing generic lands at the top of site-packages.
"""

from setuptools import find_packages, setup

library_packages = find_packages(include=["mohaq", "mohaq.*"])

setup(
    name="mohaq",
    version="0.1.0",
    description=(
        "Multi-objective hardware-aware mixed-precision quantization of recurrent "
        "speech models (SRU, GRU, LSTM) on PyTorch Lightning"
    ),
    python_requires=">=3.10",
    packages=library_packages
    + ["mohaq.callbacks", "mohaq.datamodules", "mohaq.configs", "mohaq.configs.hardware"],
    package_dir={
        "mohaq.callbacks": "callbacks",
        "mohaq.datamodules": "datamodules",
        # The shipped LightningCLI and platform YAML travel with the package so
        # an installed copy finds them (importlib.resources "mohaq.configs").
        "mohaq.configs": "lightning_configs",
    },
    package_data={"mohaq.configs": ["*.yaml"], "mohaq.configs.hardware": ["*.yaml", "*.csv"]},
    install_requires=[
        # 2.6.2 and 2.6.3 were malicious releases (GHSA-w37p-236h-pfx3).
        "pytorch-lightning>=2.6.4,!=2.6.2,!=2.6.3,<3",
        "torch>=2.1",
        "torchmetrics>=1.3",
        "nevergrad>=1.0.5",
        "pymoo>=0.6.1",
        "scikit-learn>=1.4",
        "lightning-utilities>=0.10",
        "tensorboard>=2.14",
        "soundfile>=0.12",
        "jsonargparse[signatures]>=4.27",
        "espeakng-loader>=0.2",
        "matplotlib>=3.7",
        "numpy>=1.24",
        "pyyaml>=6",
        "tqdm>=4.65",
    ],
    extras_require={
        "test": [
            "pytest>=7.4",
            "ruff>=0.4",
            "submitit>=1.5",
            "safetensors>=0.4",
            "onnx>=1.16",
            "onnxruntime>=1.18",
            # the reference SRU whose weights mohaq.models.sru_import converts
            # (its test compares both forwards); the 2.x weight layout.
            "sru>=2.6,<3",
        ],
        # `mohaq export` and `mohaq test --exported`: packed weights in safetensors,
        # the ONNX QDQ graph (opset 21), and onnxruntime to score it.
        "export": ["safetensors>=0.4", "onnx>=1.16", "onnxruntime>=1.18"],
        "cluster": ["submitit>=1.5"],
        "bench": ["sru>=2.6,<3"],
    },
    entry_points={
        "console_scripts": [
            "mohaq=mohaq.cli:main",
            "mohaq-synth-timit=mohaq.datamodules.synth_timit:main",
        ]
    },
)
