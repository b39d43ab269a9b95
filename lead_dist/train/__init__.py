"""The training loop (accelerate + DeepSpeed), its objective, checkpoints, logging and export."""
