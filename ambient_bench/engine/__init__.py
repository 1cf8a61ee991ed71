"""The stage DAG, content-addressed run store and the executor."""
