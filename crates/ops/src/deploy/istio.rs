//! Which Istio the manifests are for: what each control-plane version can
//! express, and which of the carried schemas it is checked against.
//!
//! Every limit below was read in Istio's source at the release tags named
//! (istio/istio and istio/api); `crates/ops/schemas/README.md` says where the
//! schemas come from.

use std::fmt;

/// The oldest control plane `render` targets: the seed's ASM 1.13.
pub const OLDEST_MINOR: u32 = 13;

/// An Istio control plane, by its minor version (`1.<minor>`); `None` in
/// [`IstioVersion::minor`] is the current one (what `render` writes by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IstioVersion {
    pub minor: Option<u32>,
}

impl IstioVersion {
    pub const CURRENT: IstioVersion = IstioVersion { minor: None };

    /// `1.13`, `1.13.9`, `1.22.0-asm.1` (the patch and any suffix are ignored).
    pub fn parse(text: &str) -> Result<IstioVersion, String> {
        let t = text.trim();
        let mut parts = t.split(['.', '-']);
        let major = parts.next().unwrap_or_default();
        let minor = parts.next().unwrap_or_default();
        let minor: u32 = match (major, minor.parse::<u32>()) {
            ("1", Ok(m)) => m,
            _ => {
                return Err(format!(
                    "{text:?} is not an Istio version, expected 1.<minor> (e.g. 1.13 for ASM 1.13)"
                ))
            }
        };
        if minor < OLDEST_MINOR {
            return Err(format!(
                "Istio {text} is older than 1.{OLDEST_MINOR}, the oldest this tool renders for (WasmPlugin came in 1.12 as an alpha API)"
            ));
        }
        Ok(IstioVersion { minor: Some(minor) })
    }

    fn at_least(self, minor: u32) -> bool {
        self.minor.is_none_or(|m| m >= minor)
    }

    /// `networking.istio.io/v1` and `telemetry.istio.io/v1` are served from
    /// 1.22 (istio/api `kubernetes/customresourcedefinitions.gen.yaml`: 1.21.6
    /// serves v1alpha3/v1beta1 and Telemetry v1alpha1 only); before it, v1beta1
    /// and v1alpha1.
    pub fn networking_api(self) -> &'static str {
        if self.at_least(22) {
            "networking.istio.io/v1"
        } else {
            "networking.istio.io/v1beta1"
        }
    }

    pub fn telemetry_api(self) -> &'static str {
        if self.at_least(22) {
            "telemetry.istio.io/v1"
        } else {
            "telemetry.istio.io/v1alpha1"
        }
    }

    /// A WasmPlugin reaches sidecars' outbound listeners from 1.14. In 1.13.9
    /// istiod adds WasmPlugins to the inbound filter chains
    /// (`buildInboundFilterchains` in `pilot/pkg/networking/core/v1alpha3/listener_builder.go`)
    /// and to gateways only; from 1.14.0 `buildHTTPConnectionManager`
    /// (`listener.go`) adds them to every HTTP connection manager.
    pub fn client_side(self) -> bool {
        self.at_least(14)
    }

    /// `match: [{mode: CLIENT|SERVER}]` is in the WasmPlugin schema from 1.16.0;
    /// before it a plugin runs on every listener it reaches.
    pub fn plugin_match(self) -> bool {
        self.at_least(16)
    }

    /// `failStrategy` is in the WasmPlugin schema from 1.19.0 (FAIL_RELOAD from
    /// 1.27.0); before it istiod sets no `fail_open`, and Envoy's wasm filter
    /// fails closed when the module cannot load.
    pub fn fail_strategy(self, strategy: &str) -> bool {
        match strategy {
            "FAIL_RELOAD" => self.at_least(27),
            _ => self.at_least(19),
        }
    }

    /// `failoverPriority` entries of the form `label=value` from 1.18.0
    /// (`FailoverPriorityLabelDefaultSeparator` in
    /// `pilot/pkg/networking/core/v1alpha3/loadbalancer/loadbalancer.go`);
    /// before it an entry is a label name matched against the client's own
    /// labels, so "prefer cluster X" cannot be said.
    pub fn prefer_cluster(self) -> bool {
        self.at_least(18)
    }

    /// `TrafficExtension` (`extensions.istio.io/v1alpha1`) is served from
    /// 1.30.0, which also translates every WasmPlugin into one
    /// (`pilot/pkg/config/kube/extensions/translate.go`, istio/istio #59052).
    /// It is rendered when the description names 1.30 or later; for current
    /// Istio unnamed, a WasmPlugin, which every supported release (1.27+)
    /// applies.
    pub fn traffic_extension(self) -> bool {
        self.minor.is_some_and(|m| m >= 30)
    }

    /// The kind the filter's plugins are rendered as.
    pub fn plugin_kind(self) -> &'static str {
        if self.traffic_extension() {
            "TrafficExtension"
        } else {
            "WasmPlugin"
        }
    }

    /// The carried schema set this version is checked against (see [`super::schema`]).
    pub fn schema_set(self) -> SchemaSet {
        match self.minor {
            None => SchemaSet::Current,
            Some(m) if m >= 27 => SchemaSet::Current,
            Some(m) if m >= 22 => SchemaSet::V1_22,
            Some(m) if m >= 19 => SchemaSet::V1_19,
            Some(m) if m >= 16 => SchemaSet::V1_16,
            Some(_) => SchemaSet::V1_13,
        }
    }
}

impl fmt::Display for IstioVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.minor {
            Some(m) => write!(f, "Istio 1.{m}"),
            None => f.write_str("current Istio"),
        }
    }
}

/// Which schemas one range of versions is checked against. The WasmPlugin
/// schema of the rendered fields changes at 1.16 (`match`), 1.19
/// (`failStrategy`) and 1.27 (`FAIL_RELOAD`); DestinationRule and
/// VirtualService serve `v1` from 1.22. Between those the fields the
/// manifests use are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaSet {
    /// 1.13–1.15: every schema of istio/api 1.13.9.
    V1_13,
    /// 1.16–1.18: WasmPlugin of 1.16.7, the rest of 1.13.9.
    V1_16,
    /// 1.19–1.21: WasmPlugin of 1.19.10, the rest of 1.13.9.
    V1_19,
    /// 1.22–1.26: WasmPlugin of 1.19.10, the rest current.
    V1_22,
    /// 1.27 and later: istio/api at b8f8791.
    Current,
}

impl SchemaSet {
    /// Where the WasmPlugin schema comes from.
    pub fn wasm_plugin_source(self) -> &'static str {
        match self {
            SchemaSet::V1_13 => "1.13.9",
            SchemaSet::V1_16 => "1.16.7",
            SchemaSet::V1_19 | SchemaSet::V1_22 => "1.19.10",
            SchemaSet::Current => "b8f8791",
        }
    }

    /// Where the DestinationRule and VirtualService schemas come from.
    pub fn networking_source(self) -> &'static str {
        match self {
            SchemaSet::V1_13 | SchemaSet::V1_16 | SchemaSet::V1_19 => "1.13.9",
            SchemaSet::V1_22 | SchemaSet::Current => "b8f8791",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn versions_parse_as_operators_write_them() {
        assert_eq!(IstioVersion::parse("1.13").unwrap().minor, Some(13));
        assert_eq!(IstioVersion::parse("1.13.9").unwrap().minor, Some(13));
        assert_eq!(IstioVersion::parse("1.22.0-asm.1").unwrap().minor, Some(22));
        assert!(IstioVersion::parse("1.12")
            .unwrap_err()
            .contains("older than 1.13"));
        assert!(IstioVersion::parse("2.0")
            .unwrap_err()
            .contains("not an Istio version"));
        assert!(IstioVersion::parse("latest").is_err());
    }

    #[test]
    fn what_each_version_can_say() {
        let v = |m| IstioVersion { minor: Some(m) };
        assert!(!v(13).client_side() && v(14).client_side());
        assert!(!v(15).plugin_match() && v(16).plugin_match());
        assert!(!v(17).prefer_cluster() && v(18).prefer_cluster());
        assert!(!v(18).fail_strategy("FAIL_OPEN") && v(19).fail_strategy("FAIL_OPEN"));
        assert!(!v(26).fail_strategy("FAIL_RELOAD") && v(27).fail_strategy("FAIL_RELOAD"));
        assert_eq!(v(21).networking_api(), "networking.istio.io/v1beta1");
        assert_eq!(v(22).networking_api(), "networking.istio.io/v1");
        assert_eq!(
            IstioVersion::CURRENT.networking_api(),
            "networking.istio.io/v1"
        );
        assert_eq!(v(15).schema_set(), SchemaSet::V1_13);
        assert_eq!(v(18).schema_set(), SchemaSet::V1_16);
        assert_eq!(v(26).schema_set(), SchemaSet::V1_22);
        assert_eq!(v(27).schema_set(), SchemaSet::Current);
    }
}
