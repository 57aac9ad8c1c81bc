"""Trial backends: one small interface (submit, wait, close), run locally or on Kubernetes."""
