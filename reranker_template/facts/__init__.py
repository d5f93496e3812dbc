"""Facts about this machine and the model: observed, never decided (GPUs, CPU and runtime, model metadata)."""
