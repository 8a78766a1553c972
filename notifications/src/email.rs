//! The email channel: an order's email rendered from the templates in `templates/` (plain text
//! and HTML, one pair for every kind) and sent over SMTP. The message id is the delivery's, so
//! a resent email is the same message to the receiving server and the customer's client.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::Message;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::channel::{Channel, Outcome};

/// What an order's email says, as recorded with it (`emails.content`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Content {
    pub order_id: Uuid,
    /// `confirmed`, `rejected` or `cancelled`.
    pub kind: String,
    pub placed_at: chrono::DateTime<chrono::Utc>,
    pub lines: Vec<Line>,
    pub total: Option<domain::Money>,
    /// Why it was rejected, in plain words.
    pub reason: Option<String>,
}

/// One line: the SKU and quantity, and the prices once known.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: Option<domain::Money>,
    pub line_total: Option<domain::Money>,
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders order emails.
pub struct Templates {
    env: minijinja::Environment<'static>,
    /// Where a customer sees their order: `{order_id}` is replaced.
    order_url: String,
    /// Where a customer turns order emails off.
    settings_url: String,
}

/// `1250 EUR` as `12.50 EUR`: minor units by the currency's ISO 4217 exponent.
pub fn money(m: &domain::Money) -> String {
    let digits = match m.currency.as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    };
    let sign = if m.amount_minor < 0 { "-" } else { "" };
    let (abs, scale) = (m.amount_minor.unsigned_abs(), 10u64.pow(digits));
    if digits == 0 {
        format!("{sign}{abs} {}", m.currency)
    } else {
        format!(
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            m.currency,
            width = digits as usize
        )
    }
}

impl Templates {
    pub fn new(order_url: &str, settings_url: &str) -> Self {
        let mut env = minijinja::Environment::new();
        // `.html` templates escape what they show; the text one is plain.
        env.add_template("order.txt", include_str!("../templates/order.txt"))
            .expect("templates/order.txt parses");
        env.add_template("order.html", include_str!("../templates/order.html"))
            .expect("templates/order.html parses");
        Self {
            env,
            order_url: order_url.to_owned(),
            settings_url: settings_url.to_owned(),
        }
    }

    /// The email about `content`.
    pub fn render(&self, content: &Content) -> Result<Rendered, minijinja::Error> {
        let short = &content.order_id.simple().to_string()[..8];
        let (subject, heading) = match content.kind.as_str() {
            "confirmed" => (
                format!(
                    "Order {short} confirmed: {}",
                    content.total.as_ref().map(money).unwrap_or_default()
                ),
                "Your order is confirmed",
            ),
            "rejected" => (
                format!("Order {short}: we could not take it"),
                "We could not take your order",
            ),
            _ => (
                format!("Order {short} cancelled"),
                "Your order is cancelled",
            ),
        };
        let lines: Vec<Value> = content
            .lines
            .iter()
            .map(|l| {
                serde_json::json!({
                    "sku": l.sku,
                    "quantity": l.quantity,
                    "unit_price": l.unit_price.as_ref().map(money),
                    "line_total": l.line_total.as_ref().map(money),
                })
            })
            .collect();
        let context = minijinja::context! {
            subject => subject,
            heading => heading,
            kind => content.kind,
            order_id => content.order_id.to_string(),
            placed_at => content.placed_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            lines => lines,
            total => content.total.as_ref().map(money),
            reason => content.reason,
            link => self.order_url.replace("{order_id}", &content.order_id.to_string()),
            settings_link => self.settings_url,
        };
        Ok(Rendered {
            text: self.env.get_template("order.txt")?.render(&context)?,
            html: self.env.get_template("order.html")?.render(&context)?,
            subject,
        })
    }
}

/// Emails over SMTP.
pub struct Email {
    smtp: crate::smtp::Smtp,
    from: Mailbox,
    templates: Templates,
    /// The host of the message ids (`<delivery id>@host`).
    id_host: String,
}

impl Email {
    /// A channel to the SMTP server at `url` (`smtp://host:port` plain, `?tls=required` for
    /// STARTTLS, `smtps://` for TLS; user and password in the URL), sending as `from`, with
    /// at most `connections` connections kept open while idle.
    pub fn new(
        url: &str,
        from: &str,
        templates: Templates,
        timeout: Duration,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let smtp = crate::smtp::Smtp::from_url(url, timeout, connections)?;
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("MAIL_FROM is not an address: {e}"))?;
        let id_host = from.email.domain().to_owned();
        Ok(Self {
            smtp,
            from,
            templates,
            id_host,
        })
    }

    fn message(&self, to: &str, id: Uuid, payload: &Value) -> Result<Message, String> {
        let content: Content =
            serde_json::from_value(payload.clone()).map_err(|e| format!("not an email: {e}"))?;
        let rendered = self
            .templates
            .render(&content)
            .map_err(|e| format!("the templates failed: {e}"))?;
        let to: Mailbox = to.parse().map_err(|_| "the address does not parse")?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!("<{id}@{}>", self.id_host)))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|e| format!("the message could not be built: {e}"))
    }
}

impl Channel for Email {
    /// The customer's address, opened just before sending.
    type Destination = String;

    fn name(&self) -> &'static str {
        "email"
    }

    async fn deliver(&self, to: &String, id: Uuid, payload: &Value) -> Outcome {
        let message = match self.message(to, id, payload) {
            Ok(message) => message,
            Err(error) => {
                return Outcome::Failed {
                    status: None,
                    error,
                }
            }
        };
        let started = std::time::Instant::now();
        let answer = self.smtp.send(message).await;
        metrics::histogram!("email_attempt_seconds").record(started.elapsed().as_secs_f64());
        match answer {
            Ok(response) => Outcome::Delivered {
                status: response.code().into(),
            },
            // A server's refusal may quote the address: it is never kept in the clear.
            Err(refusal) => Outcome::Failed {
                status: refusal.status,
                error: format!("SMTP: {}", refusal.message).replace(to.as_str(), "<address>"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> domain::Money {
        domain::Money::new(minor, domain::Currency::parse("EUR").unwrap())
    }

    fn content(kind: &str) -> Content {
        Content {
            order_id: Uuid::from_u128(0x0193a1b2_7c3d_7e4f_8a5b_6c7d8e9f0a1b),
            kind: kind.into(),
            placed_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            lines: vec![Line {
                sku: "MUG-<1>".into(),
                quantity: 2,
                unit_price: Some(eur(1250)),
                line_total: Some(eur(2500)),
            }],
            total: Some(eur(2500)),
            reason: (kind == "rejected").then(|| "Out of stock: MUG-<1> & co.".into()),
        }
    }

    #[test]
    fn money_is_shown_in_major_units() {
        assert_eq!(money(&eur(2500)), "25.00 EUR");
        assert_eq!(money(&eur(5)), "0.05 EUR");
        assert_eq!(money(&eur(-120)), "-1.20 EUR");
        let yen = domain::Money::new(500, domain::Currency::parse("JPY").unwrap());
        assert_eq!(money(&yen), "500 JPY");
    }

    #[test]
    fn each_kind_names_the_order_and_its_total_and_escapes_html() {
        let t = Templates::new(
            "https://shop.example/orders/{order_id}",
            "https://shop.example/settings",
        );
        let confirmed = t.render(&content("confirmed")).unwrap();
        assert_eq!(confirmed.subject, "Order 0193a1b2 confirmed: 25.00 EUR");
        for part in [&confirmed.text, &confirmed.html] {
            assert!(
                part.contains("0193a1b2-7c3d-7e4f-8a5b-6c7d8e9f0a1b"),
                "{part}"
            );
            assert!(part.contains("25.00 EUR"), "{part}");
        }
        let link = "https://shop.example/orders/0193a1b2-7c3d-7e4f-8a5b-6c7d8e9f0a1b";
        assert!(confirmed.text.contains(link), "{}", confirmed.text);
        // In HTML the link is escaped as every value is (`/` as `&#x2f;`, which reads back
        // as `/`).
        let escaped = format!("href=\"{}\"", link.replace('/', "&#x2f;"));
        assert!(confirmed.html.contains(&escaped), "{}", confirmed.html);
        assert!(confirmed.text.contains("2 x MUG-<1>"), "{}", confirmed.text);
        assert!(
            confirmed.html.contains("MUG-&lt;1&gt;"),
            "{}",
            confirmed.html
        );
        let rejected = t.render(&content("rejected")).unwrap();
        assert!(rejected
            .html
            .contains("Out of stock: MUG-&lt;1&gt; &amp; co."));
        assert!(rejected.text.contains("Out of stock: MUG-<1> & co."));
        let cancelled = t.render(&content("cancelled")).unwrap();
        assert_eq!(cancelled.subject, "Order 0193a1b2 cancelled");
    }
}
