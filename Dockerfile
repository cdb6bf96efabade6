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
# gunicorn reads it from the working directory: its logs, the access log included, as JSON.
COPY gunicorn.conf.py ./
RUN pip install --no-cache-dir .
# The admin's CSS and JS, collected once into STATIC_ROOT (/app/var/static) with hashed names
# and gzipped, for WhiteNoise to serve with DJANGO_DEBUG off (project/settings.py). Production
# settings refuse to load without their secrets, so this one command gets stand-ins: nothing
# here connects anywhere, and none of them stays in the image's environment.
RUN DJANGO_DEBUG=0 DJANGO_SECRET_KEY=collectstatic-build-only \
    DATABASE_URL=postgres://collectstatic@build.invalid/unused \
    DUALSEND_API_TOKENS=collectstatic-build-only \
    INVENTORY_API_URL=https://inventory.invalid INVENTORY_API_TOKEN=collectstatic-build-only \
    PAYMENT_API_URL=https://payment.invalid PAYMENT_API_KEY=collectstatic-build-only \
    python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "project.wsgi", "-b", "0.0.0.0:8000", "--worker-class", "gthread", "--threads", "16"]

FROM base AS development
COPY devstack devstack
RUN pip install --no-cache-dir ".[demo]"

# Last, so that it is what a plain `docker build` makes.
FROM base AS product
