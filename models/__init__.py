"""Change-model definitions (``models.changenet``) and the weights changewatch ships."""
