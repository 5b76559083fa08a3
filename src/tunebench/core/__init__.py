"""Training: datasets prepared as arrays (data), the model registry (models), the population
engine (engine) and the compute device (devices). Imports tunebench.spec only."""
