"""Training: learning-rate schedules, optimizers, the jitted train step, the loop."""
