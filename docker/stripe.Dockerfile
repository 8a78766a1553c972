# The local Stripe-compatible server of `docker compose up` (localstripe, from PyPI): the same
# runner as `cargo xtask up` starts, listening inside the compose network. Development only:
# a deployment points the payments service's STRIPE_API_BASE at Stripe.
FROM python:3.12-slim
WORKDIR /app
COPY command-services/payments/local-stripe/requirements.txt ./
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements.txt
COPY command-services/payments/local-stripe/run.py ./
RUN useradd --system --home /data stripe && mkdir /data && chown stripe /data
USER stripe
CMD ["python", "run.py", "--host", "0.0.0.0", "--port", "8420", "--state", "/data/records.pickle"]
