"""Verifies webhook deliveries as a partner would, with the Standard Webhooks reference library.

Reads a JSON file of deliveries ({"secret", "headers", "body" in base64}) and prints, for each,
the verified webhook-id; exits non-zero at the first one that does not verify.
"""

import base64
import json
import sys

from standardwebhooks.webhooks import Webhook

for delivery in json.load(open(sys.argv[1])):
    body = base64.b64decode(delivery["body"])
    Webhook(delivery["secret"]).verify(body, delivery["headers"])
    print(delivery["headers"]["webhook-id"])
