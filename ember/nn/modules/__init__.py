"""The Module classes of `ember.nn` (re-exported from `ember.nn`)."""
