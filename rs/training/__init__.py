"""Training the change network: ``config`` → ``sampling`` → ``losses`` → ``loop`` with ``state``.

``config`` (``TrainConfig``, light, so the command line reads its defaults without torch) →
``sampling`` (pairs prepared and loaded whole, augmented batches) → ``losses`` → ``loop``
(``train``: optimise, validate, keep the best checkpoint) with ``state`` (what a run has done, to
resume from).
"""
