"""The reference forward of each family, one module per name a family declares (Family.reference)."""
