//! Lists in pages: `limit` and `offset` from the query, and the page's
//! `{ items, total, limit, offset }` answer.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;

/// `limit` and `offset` of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 500;

impl Page {
    pub fn from_query(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let num = |name: &str, default: u32| -> Result<u32, ApiError> {
            match q.get(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    ApiError::invalid(format!("{name} must be a non-negative integer"))
                }),
            }
        };
        let limit = num("limit", DEFAULT_LIMIT)?;
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!("limit must be 1 to {MAX_LIMIT}")));
        }
        Ok(Page {
            limit,
            offset: num("offset", 0)?,
        })
    }

    /// The page of a whole list.
    pub fn of<T>(self, mut items: Vec<T>) -> PageOf<T> {
        let total = items.len();
        let start = usize::try_from(self.offset)
            .unwrap_or(usize::MAX)
            .min(total);
        let end = start
            .saturating_add(usize::try_from(self.limit).unwrap_or(usize::MAX))
            .min(total);
        items.truncate(end);
        items.drain(..start);
        self.wrap(items, u64::try_from(total).unwrap_or(u64::MAX))
    }

    /// The page of a whole list that may be the inventory's last copy
    /// (`stale`: the daemon could not be asked).
    pub fn of_maybe_stale<T>(self, items: Vec<T>, stale: bool) -> PageOf<T> {
        PageOf {
            stale: Some(stale),
            ..self.of(items)
        }
    }

    /// A page fetched already, with the total.
    pub fn wrap<T>(self, items: Vec<T>, total: u64) -> PageOf<T> {
        PageOf {
            items,
            total,
            limit: self.limit,
            offset: self.offset,
            stale: None,
        }
    }
}

/// A page of a list: `limit` items from `offset` on.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PageOf<T> {
    pub items: Vec<T>,
    /// Items in all pages
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
    /// The daemon could not be asked: this is the inventory's last copy
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = bool)]
    pub stale: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let p = Page::from_query(&q(&[("limit", "2"), ("offset", "1")])).unwrap();
        let v = p.of((0..5).collect());
        assert_eq!(v.items, [1, 2]);
        assert_eq!(v.total, 5);
        let far = Page::from_query(&q(&[("offset", "99")]))
            .unwrap()
            .of(vec![1]);
        assert_eq!(far.items, [0; 0]);
        assert!(Page::from_query(&q(&[("limit", "0")])).is_err());
        assert!(Page::from_query(&q(&[("limit", "501")])).is_err());
        assert!(Page::from_query(&q(&[("offset", "-1")])).is_err());
    }

    #[test]
    fn a_page_says_stale_only_when_it_may_be() {
        let p = Page {
            limit: 10,
            offset: 0,
        };
        let fresh = serde_json::to_value(p.of(vec!["a"])).unwrap();
        assert_eq!(
            fresh,
            serde_json::json!({ "items": ["a"], "total": 1, "limit": 10, "offset": 0 })
        );
        let stale = serde_json::to_value(p.of_maybe_stale(vec!["a"], true)).unwrap();
        assert_eq!(stale["stale"], true);
    }
}
