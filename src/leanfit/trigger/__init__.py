"""Keeping the pipeline current: dataset change detection, the watch loop, submission to KFP."""
