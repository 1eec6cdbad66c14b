"""What the routes do, in terms of the job store and the blob store, free of HTTP: the
submit, the answers about a request, cancels and retries, uploads as inputs."""
