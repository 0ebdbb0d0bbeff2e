"""The Chord overlay: sans-IO node (`node.ChordNode`), messages, records."""
