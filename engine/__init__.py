"""rmx engine: load models, score tokens exactly, decode with forks and interventions, train and evaluate."""
