FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY project project
COPY dualsend_app dualsend_app
COPY tasks tasks
COPY manage.py ./
RUN pip install --no-cache-dir -e .
EXPOSE 8000
CMD ["gunicorn", "project.wsgi", "-b", "0.0.0.0:8000", "--worker-class", "gthread", "--threads", "16"]
