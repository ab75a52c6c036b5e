"""One request through the pool: what it asks (task class) and how new it is (context state), which member
answers (trust and cost), what it may ask for (limits), and the metabolic state that tunes the choice."""
