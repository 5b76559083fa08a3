"""The experiments: an ablation job's runs trained as populations (ablate), hyperparameter-
search studies through Optuna (search). Imports the layers below."""
