"""LoRA Lab's engine: adapters, training, analysis. UI-free: nothing here imports streamlit."""

__version__ = "0.1.0"
