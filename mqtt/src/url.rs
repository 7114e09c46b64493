//! Broker URLs: `mqtt://host[:port]` and `mqtts://host[:port]`, host a name, an IPv4 address
//! or a bracketed IPv6 address.

use std::fmt;

/// Default port of plain MQTT.
pub const MQTT_PORT: u16 = 1883;
/// Default port of MQTT over TLS.
pub const MQTTS_PORT: u16 = 8883;

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker URL {url:?}: {reason}")]
pub struct UrlError {
    /// The URL given.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Where a broker listens and whether it speaks TLS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BrokerUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the connection uses TLS (`mqtts://`).
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port][/]` (port 1883 by default) or `mqtts://host[:port][/]`
    /// (8883). IPv6 hosts are written in brackets: `mqtt://[::1]:1883`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let error = |reason| UrlError { url: url.to_owned(), reason };
        let (rest, tls) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (rest, true)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (rest, false)
        } else {
            return Err(error("must start with mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) {
            return Err(error("expected host and port only, without path or credentials"));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| error("unclosed '['"))?;
                match after {
                    "" => (host, None),
                    after => (
                        host,
                        Some(after.strip_prefix(':').ok_or_else(|| error("junk after ']'"))?),
                    ),
                }
            }
            None if rest.matches(':').count() > 1 => {
                return Err(error("an IPv6 address must be written in brackets, e.g. [::1]"));
            }
            None => match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        if host.is_empty() {
            return Err(error("missing host"));
        }
        let port = match port {
            None if tls => MQTTS_PORT,
            None => MQTT_PORT,
            Some(port) => {
                port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| error("invalid port"))?
            }
        };
        Ok(Self { host: host.to_owned(), port, tls })
    }
}

impl std::str::FromStr for BrokerUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, tls: bool) -> BrokerUrl {
        BrokerUrl { host: host.into(), port, tls }
    }

    #[test]
    fn urls_with_names_ipv4_and_ipv6_hosts_parse_with_default_ports() {
        let cases = [
            ("mqtt://127.0.0.1:1884", url("127.0.0.1", 1884, false)),
            ("mqtt://broker", url("broker", 1883, false)),
            ("mqtt://broker/", url("broker", 1883, false)),
            ("mqtts://broker.example", url("broker.example", 8883, true)),
            ("mqtts://broker.example:9999", url("broker.example", 9999, true)),
            ("mqtt://[::1]:1883", url("::1", 1883, false)),
            ("mqtt://[::1]", url("::1", 1883, false)),
            ("mqtts://[fe80::1]", url("fe80::1", 8883, true)),
        ];
        for (text, expected) in cases {
            assert_eq!(BrokerUrl::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let cases = [
            ("http://broker", "must start with mqtt:// or mqtts://"),
            ("mqtt://:1883", "missing host"),
            ("mqtt://b:port", "invalid port"),
            ("mqtt://b:0", "invalid port"),
            ("mqtt://b:1883/topic", "expected host and port only, without path or credentials"),
            ("mqtt://user@b", "expected host and port only, without path or credentials"),
            ("mqtt://[::1", "unclosed '['"),
            ("mqtt://[::1]x", "junk after ']'"),
            ("mqtt://::1", "an IPv6 address must be written in brackets, e.g. [::1]"),
        ];
        for (text, reason) in cases {
            assert_eq!(BrokerUrl::parse(text).map_err(|e| e.reason), Err(reason), "{text}");
        }
    }

    #[test]
    fn a_parsed_url_prints_back_to_an_equal_url() {
        for text in ["mqtt://broker:1883", "mqtts://[::1]:8883", "mqtt://10.0.0.1:1"] {
            let parsed = BrokerUrl::parse(text).expect("valid");
            assert_eq!(parsed.to_string(), text);
            assert_eq!(BrokerUrl::parse(&parsed.to_string()), Ok(parsed));
        }
    }
}
