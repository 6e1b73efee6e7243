"""The dream: one simulator over a world model, its Gymnasium and SB3 faces, and their registration."""
