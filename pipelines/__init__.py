"""The pipeline DAG (`automl.py`) and its compiled YAML (`automl_pipeline.yaml`)."""
