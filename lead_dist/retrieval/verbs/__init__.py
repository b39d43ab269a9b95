"""The retrieval verbs of `lead-dist`: encode, search, evaluate, mine (one module each)."""
