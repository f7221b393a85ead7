"""DVC pipeline stages for training Hugging Face models: the importable logic."""
