"""HTTP replicas of the real sites, serving the local sky on 127.0.0.1."""
