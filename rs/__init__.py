"""The changewatch library, one module per stage of the data flow.

``align`` → ``tiling`` → ``infer`` → ``vectorize`` → ``crosscheck`` → ``export``; ``pipeline``
runs them in order for one scene pair.
"""
