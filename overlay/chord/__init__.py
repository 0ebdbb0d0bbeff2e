"""The Chord overlay: the sans-IO node (`node.ChordNode`, a facade over one module per
concern: see its docstring), messages, records, and the wire codec."""
