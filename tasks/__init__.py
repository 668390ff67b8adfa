"""The stages of a run, one module each, one side effect each (installed as embedforge.tasks)."""
