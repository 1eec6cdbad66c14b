"""What a request says, read strictly: its JSON body, its headers, its path and query
parameters. Each refusal is a 4xx naming what was refused."""
