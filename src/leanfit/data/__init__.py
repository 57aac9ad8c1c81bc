"""Datasets: sources, fingerprints, stratified splits and subsets, batched augmentation."""
