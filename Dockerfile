# One file, two images:
#   docker build .                        the product: project/, dualsend_app/, tasks/, nothing else
#   docker build --target development .   the product plus devstack/ (the partner simulators,
#                                         demo, chaos, bench) and their dependencies
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY project project
COPY dualsend_app dualsend_app
COPY tasks tasks
COPY manage.py ./
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["gunicorn", "project.wsgi", "-b", "0.0.0.0:8000", "--worker-class", "gthread", "--threads", "16"]

FROM base AS development
COPY devstack devstack
RUN pip install --no-cache-dir ".[demo]"

# Last, so that it is what a plain `docker build` makes.
FROM base AS product
