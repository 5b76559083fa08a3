"""What an experiment is, as data: params.yaml's schema and the layering of a run's settings
(config), the grid of runs (grid), the claims files' schema and their check against the grid
(claims). Imports nothing else of tunebench."""
