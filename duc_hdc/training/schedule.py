"""Learning-rate schedules: pure functions of the iteration, so a resumed run is exact."""


def learning_rate(iteration, train_cfg, iters_per_epoch, total_iters):
    """The learning rate at ``iteration`` (0-based): a pure function, so resume is exact."""
    base = float(train_cfg["lr"])
    warmup = int(train_cfg["warmup_iters"])
    if warmup and iteration < warmup:
        return base * (iteration + 1) / warmup
    kind = train_cfg["lr_schedule"]
    if kind == "constant":
        return base
    if kind == "step":
        epoch = iteration // max(1, iters_per_epoch)
        return base * float(train_cfg["lr_factor"]) ** (epoch // int(train_cfg["lr_step_epochs"]))
    # poly, over the iterations after warm-up
    span = max(1, total_iters - warmup)
    progress = min(1.0, (iteration - warmup) / span)
    return base * (1.0 - progress) ** float(train_cfg["lr_power"])
