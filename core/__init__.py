"""perdure's engine-neutral core. It imports no engine."""
