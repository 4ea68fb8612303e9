"""GPU stage: models, dataset readers, transforms, runner and CLI. Knows no metric."""
