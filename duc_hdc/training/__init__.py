"""Training: loss, learning-rate schedules, verified checkpoints, the train loop, distributed jobs."""
