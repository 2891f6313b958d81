"""Writers: one module per application whose data a shadow set makes consistent."""
