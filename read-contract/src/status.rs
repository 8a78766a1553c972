//! The status words the projections store in the read tables' `status` columns and the query
//! API filters on: one enum per table, each word spelled once.
//!
//! The columns stay `text` and the API answers them as strings, so the enums only convert;
//! they are not part of any JSON shape.

/// Declares a status enum with its stored words, `ALL` (in life-cycle order), `as_str` and
/// `parse`, so the three enums cannot differ in how they convert.
macro_rules! status {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every status, in life-cycle order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The word stored in the read table.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }

            /// The status a stored or requested word names, if any.
            pub fn parse(word: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|s| s.as_str() == word)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status! {
    /// `orders_view.status`. `confirmed` and `cancelled` are also outcomes in
    /// `order_outcomes_daily`, beside the rejection reasons.
    OrderStatus {
        /// Placed, not priced yet.
        Placed => "placed",
        /// Inventory answered with prices; the total is known.
        Priced => "priced",
        Confirmed => "confirmed",
        /// Refused by the saga; `rejection_reason` says why.
        Rejected => "rejected",
        Cancelled => "cancelled",
    }
}

status! {
    /// `payments_view.status`: what the payment's last event did.
    PaymentStatus {
        Authorised => "authorised",
        Declined => "declined",
        Captured => "captured",
        Voided => "voided",
        Refunded => "refunded",
    }
}

status! {
    /// `sagas_view.status`; the saga's `outcome` column says how a completed one ended.
    SagaStatus {
        Running => "running",
        Compensating => "compensating",
        Completed => "completed",
        /// The saga cannot go on by itself (a compensation was refused, a step was refused
        /// after the payment's capture, or an input it did not cause contradicts it), so an
        /// operator has to look.
        NeedsAttention => "needs_attention",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: Copy + PartialEq + std::fmt::Debug>(
        all: &[T],
        as_str: fn(T) -> &'static str,
        parse: fn(&str) -> Option<T>,
    ) {
        for s in all {
            assert_eq!(parse(as_str(*s)), Some(*s));
        }
        let mut words: Vec<_> = all.iter().map(|s| as_str(*s)).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), all.len(), "each word names one status");
        assert_eq!(parse("shipped"), None);
    }

    #[test]
    fn every_status_round_trips_through_its_word() {
        round_trips(OrderStatus::ALL, OrderStatus::as_str, OrderStatus::parse);
        round_trips(
            PaymentStatus::ALL,
            PaymentStatus::as_str,
            PaymentStatus::parse,
        );
        round_trips(SagaStatus::ALL, SagaStatus::as_str, SagaStatus::parse);
    }

    #[test]
    fn the_stored_words_are_the_ones_already_in_read_databases() {
        // Rows written before these enums existed hold these words; renaming one would need a
        // migration, so the lists are pinned here.
        fn words<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> Vec<&'static str> {
            all.iter().map(|s| as_str(*s)).collect()
        }
        assert_eq!(
            words(OrderStatus::ALL, OrderStatus::as_str),
            ["placed", "priced", "confirmed", "rejected", "cancelled"]
        );
        assert_eq!(
            words(PaymentStatus::ALL, PaymentStatus::as_str),
            ["authorised", "declined", "captured", "voided", "refunded"]
        );
        assert_eq!(
            words(SagaStatus::ALL, SagaStatus::as_str),
            ["running", "compensating", "completed", "needs_attention"]
        );
    }
}
