//! One case per validation rule: a pod, and the exact errors
//! (`<field path>: <type>[: <detail>]`) the API server would report.

use k8s_openapi::api::core::v1::Pod;

use super::validate_pod;
use crate::manifest::defaults;
use crate::manifest::field::ErrorType;

/// A valid pod; cases append to its `spec` or patch it by text replacement.
const BASE: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: app
    image: busybox:1.36
"#;

fn errors_of(yaml: &str) -> Vec<(String, ErrorType, String)> {
    let mut pod: Pod =
        serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("bad test yaml: {e}\n{yaml}"));
    defaults::apply(&mut pod);
    validate_pod(&pod)
        .into_iter()
        .map(|e| (e.field.to_string(), e.kind, e.to_string()))
        .collect()
}

/// Replaces `from` in BASE (which must occur) with `to`.
fn patch(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

/// Adds lines under the first container.
fn container(extra: &str) -> String {
    patch(
        "    image: busybox:1.36\n",
        &format!("    image: busybox:1.36\n{extra}"),
    )
}

/// Adds lines under `spec`.
fn spec(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[track_caller]
fn expect(yaml: &str, want: &[(&str, ErrorType)]) {
    let got = errors_of(yaml);
    let got_pairs: Vec<(String, ErrorType)> = got.iter().map(|(f, t, _)| (f.clone(), *t)).collect();
    let want_pairs: Vec<(String, ErrorType)> =
        want.iter().map(|(f, t)| (f.to_string(), *t)).collect();
    assert_eq!(
        got_pairs,
        want_pairs,
        "\nfull messages: {:#?}",
        got.iter().map(|g| &g.2).collect::<Vec<_>>()
    );
}

#[track_caller]
fn expect_msg(yaml: &str, message: &str) {
    let got = errors_of(yaml);
    assert!(
        got.iter().any(|(_, _, m)| m == message),
        "want {message:?}\ngot {:#?}",
        got.iter().map(|g| &g.2).collect::<Vec<_>>()
    );
}

use ErrorType::*;

#[test]
fn base_pod_is_valid() {
    expect(BASE, &[]);
}

#[test]
fn pod_name_is_required() {
    expect_msg(
        &patch("  name: web\n", ""),
        "metadata.name: Required value: name or generateName is required",
    );
}

#[test]
fn pod_name_must_be_a_dns_subdomain() {
    expect(
        &patch("name: web", "name: Web_1"),
        &[("metadata.name", Invalid)],
    );
    expect(&patch("name: web", "name: web.example.com"), &[]);
}

#[test]
fn namespace_must_be_a_dns_label() {
    expect(
        &patch("  name: web\n", "  name: web\n  namespace: my.ns\n"),
        &[("metadata.namespace", Invalid)],
    );
}

#[test]
fn label_keys_and_values_are_checked_at_the_labels_path() {
    expect(
        &patch("{app: web}", "{\"-bad\": ok, good: \"not ok\"}"),
        &[("metadata.labels", Invalid), ("metadata.labels", Invalid)],
    );
}

#[test]
fn annotation_keys_must_be_qualified_names() {
    expect(
        &patch(
            "  labels: {app: web}\n",
            "  annotations: {\"a/b/c\": x, \"Example.com/ok\": y}\n",
        ),
        &[("metadata.annotations", Invalid)],
    );
}

#[test]
fn annotations_total_size_is_capped_at_256k() {
    let big = "x".repeat(256 * 1024);
    expect_msg(
        &patch(
            "  labels: {app: web}\n",
            &format!("  annotations: {{k: \"{big}\"}}\n"),
        ),
        "metadata.annotations: Too long: may not be more than 262144 bytes",
    );
}

#[test]
fn containers_are_required() {
    expect(
        &patch(
            "  containers:\n  - name: app\n    image: busybox:1.36\n",
            "  containers: []\n",
        ),
        &[("spec.containers", Required)],
    );
}

#[test]
fn container_name_is_required_and_a_dns_label() {
    expect(
        &patch("name: app", "name: \"\""),
        &[("spec.containers[0].name", Required)],
    );
    expect(
        &patch("name: app", "name: App"),
        &[("spec.containers[0].name", Invalid)],
    );
}

#[test]
fn container_names_are_unique_across_init_and_app_containers() {
    let y = spec(
        "  initContainers:\n  - {name: init, image: busybox}\n  - {name: app, image: busybox}\n",
    );
    expect_msg(&y, "spec.initContainers[1].name: Duplicate value: \"app\"");
    let y = patch(
        "    image: busybox:1.36\n",
        "    image: busybox:1.36\n  - {name: app, image: busybox}\n",
    );
    expect(&y, &[("spec.containers[1].name", Duplicate)]);
}

#[test]
fn image_is_required() {
    expect(
        &patch("    image: busybox:1.36\n", ""),
        &[("spec.containers[0].image", Required)],
    );
    expect(
        &patch("image: busybox:1.36", "image: \" busybox\""),
        &[("spec.containers[0].image", Invalid)],
    );
}

#[test]
fn image_pull_policy_must_be_known() {
    expect(
        &container("    imagePullPolicy: Sometimes\n"),
        &[("spec.containers[0].imagePullPolicy", NotSupported)],
    );
}

#[test]
fn termination_message_policy_must_be_known() {
    expect(
        &container("    terminationMessagePolicy: Logs\n"),
        &[("spec.containers[0].terminationMessagePolicy", NotSupported)],
    );
}

#[test]
fn container_port_must_be_in_range() {
    expect_msg(&container("    ports: [{containerPort: 70000}]\n"), "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive");
    expect(
        &container("    ports: [{containerPort: 0}]\n"),
        &[("spec.containers[0].ports[0].containerPort", Required)],
    );
    expect(
        &container("    ports: [{containerPort: 80, hostPort: -1}]\n"),
        &[("spec.containers[0].ports[0].hostPort", Invalid)],
    );
}

#[test]
fn port_protocol_must_be_tcp_udp_or_sctp() {
    expect(
        &container("    ports: [{containerPort: 80, protocol: HTTP}]\n"),
        &[("spec.containers[0].ports[0].protocol", NotSupported)],
    );
}

#[test]
fn port_names_are_iana_service_names_and_unique() {
    expect(
        &container("    ports: [{containerPort: 80, name: HTTP}]\n"),
        &[
            ("spec.containers[0].ports[0].name", Invalid),
            ("spec.containers[0].ports[0].name", Invalid),
        ],
    );
    expect(
        &container("    ports: [{containerPort: 80, name: web}, {containerPort: 81, name: web}]\n"),
        &[("spec.containers[0].ports[1].name", Duplicate)],
    );
}

#[test]
fn host_port_must_match_container_port_with_host_network() {
    expect(
        &format!(
            "{}  hostNetwork: true\n",
            container("    ports: [{containerPort: 80, hostPort: 8080}]\n")
        ),
        &[("spec.containers[0].ports[0].hostPort", Invalid)],
    );
}

#[test]
fn env_names_are_required_and_printable_without_equals() {
    expect(
        &container("    env: [{name: \"\", value: x}]\n"),
        &[("spec.containers[0].env[0].name", Required)],
    );
    expect(
        &container("    env: [{name: \"A=B\", value: x}]\n"),
        &[("spec.containers[0].env[0].name", Invalid)],
    );
    expect(
        &container("    env: [{name: \"my.var-1\", value: x}]\n"),
        &[],
    );
}

#[test]
fn value_from_needs_exactly_one_source_and_no_value() {
    expect_msg(&container("    env: [{name: A, valueFrom: {}}]\n"), "spec.containers[0].env[0].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`");
    expect_msg(
        &container("    env: [{name: A, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n"),
        "spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
    );
    expect_msg(
        &container("    env: [{name: A, valueFrom: {fieldRef: {fieldPath: metadata.name}, configMapKeyRef: {name: c, key: k}}}]\n"),
        "spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not have more than one field specified at a time",
    );
}

#[test]
fn field_ref_paths_are_the_downward_api_set() {
    expect(
        &container("    env: [{name: A, valueFrom: {fieldRef: {fieldPath: spec.hostname}}}]\n"),
        &[(
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
            NotSupported,
        )],
    );
    expect(&container("    env: [{name: A, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}]\n"), &[]);
    expect(
        &container("    env: [{name: A, valueFrom: {fieldRef: {fieldPath: metadata.labels}}}]\n"),
        &[(
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
            NotSupported,
        )],
    );
    expect(&container("    env: [{name: A, valueFrom: {fieldRef: {fieldPath: status.podIP, apiVersion: v2}}}]\n"), &[("spec.containers[0].env[0].valueFrom.fieldRef.apiVersion", Invalid)]);
}

#[test]
fn resource_field_refs_name_a_resource_and_a_valid_divisor() {
    expect(
        &container("    env: [{name: A, valueFrom: {resourceFieldRef: {resource: limits.gpu}}}]\n"),
        &[(
            "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource",
            NotSupported,
        )],
    );
    expect(&container("    env: [{name: A, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 2m}}}]\n"), &[("spec.containers[0].env[0].valueFrom.resourceFieldRef.divisor", Invalid)]);
    expect(&container("    env: [{name: A, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}]\n"), &[]);
}

#[test]
fn config_map_and_secret_key_refs_need_a_valid_key_and_name() {
    expect(
        &container("    env: [{name: A, valueFrom: {configMapKeyRef: {name: c, key: \"a/b\"}}}]\n"),
        &[(
            "spec.containers[0].env[0].valueFrom.configMapKeyRef.key",
            Invalid,
        )],
    );
    expect(
        &container("    env: [{name: A, valueFrom: {secretKeyRef: {name: \"\", key: k}}}]\n"),
        &[(
            "spec.containers[0].env[0].valueFrom.secretKeyRef.name",
            Required,
        )],
    );
}

#[test]
fn env_from_needs_exactly_one_source_and_a_valid_prefix() {
    expect(
        &container("    envFrom: [{prefix: X}]\n"),
        &[("spec.containers[0].envFrom[0]", Invalid)],
    );
    expect(
        &container("    envFrom: [{configMapRef: {name: a}, secretRef: {name: b}}]\n"),
        &[("spec.containers[0].envFrom[0]", Invalid)],
    );
    expect(
        &container("    envFrom: [{prefix: \"A=\", configMapRef: {name: a}}]\n"),
        &[("spec.containers[0].envFrom[0].prefix", Invalid)],
    );
}

#[test]
fn volume_names_are_dns_labels_and_unique() {
    expect(
        &spec("  volumes: [{name: Data, emptyDir: {}}]\n"),
        &[("spec.volumes[0].name", Invalid)],
    );
    expect(
        &spec("  volumes: [{name: d, emptyDir: {}}, {name: d, emptyDir: {}}]\n"),
        &[("spec.volumes[1].name", Duplicate)],
    );
}

#[test]
fn volumes_have_exactly_one_source() {
    expect_msg(
        &spec("  volumes: [{name: d, emptyDir: {}, hostPath: {path: /tmp}}]\n"),
        "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type",
    );
}

#[test]
fn host_path_needs_a_path_and_a_known_type() {
    expect(
        &spec("  volumes: [{name: h, hostPath: {path: /tmp, type: Folder}}]\n"),
        &[("spec.volumes[0].hostPath.type", NotSupported)],
    );
    expect(
        &spec("  volumes: [{name: h, hostPath: {path: /tmp/../etc}}]\n"),
        &[("spec.volumes[0].hostPath.path", Invalid)],
    );
    expect(
        &spec("  volumes: [{name: h, hostPath: {path: \"\"}}]\n"),
        &[("spec.volumes[0].hostPath.path", Required)],
    );
}

#[test]
fn config_map_and_secret_volumes_check_names_modes_and_item_paths() {
    expect(
        &spec("  volumes: [{name: c, configMap: {name: \"\"}}]\n"),
        &[("spec.volumes[0].configMap.name", Required)],
    );
    expect(
        &spec("  volumes: [{name: c, secret: {}}]\n"),
        &[("spec.volumes[0].secret.secretName", Required)],
    );
    expect(
        &spec("  volumes: [{name: c, configMap: {name: x, defaultMode: 512}}]\n"),
        &[("spec.volumes[0].configMap.defaultMode", Invalid)],
    );
    expect(
        &spec("  volumes: [{name: c, configMap: {name: x, items: [{key: k, path: ../etc/passwd}, {key: k, path: /abs}]}}]\n"),
        &[
            ("spec.volumes[0].configMap.items[0].path", Invalid),
            ("spec.volumes[0].configMap.items[0].path", Invalid),
            ("spec.volumes[0].configMap.items[1].path", Invalid),
        ],
    );
}

#[test]
fn downward_api_volume_items_use_the_metadata_field_set() {
    expect(&spec("  volumes: [{name: d, downwardAPI: {items: [{path: ip, fieldRef: {fieldPath: status.podIP}}]}}]\n"), &[("spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath", NotSupported)]);
    expect(&spec("  volumes: [{name: d, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}]\n"), &[]);
}

#[test]
fn volume_mounts_need_an_existing_volume_and_unique_mount_paths() {
    expect(
        &container("    volumeMounts: [{name: missing, mountPath: /data}]\n"),
        &[("spec.containers[0].volumeMounts[0].name", NotFound)],
    );
    let y = format!(
        "{}  volumes: [{{name: d, emptyDir: {{}}}}]\n",
        container("    volumeMounts: [{name: d, mountPath: /data}, {name: d, mountPath: data/}]\n")
    );
    expect_msg(
        &y,
        "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"data/\": must be unique",
    );
}

#[test]
fn relative_mount_paths_are_accepted() {
    let y = format!(
        "{}  volumes: [{{name: d, emptyDir: {{}}}}]\n",
        container("    volumeMounts: [{name: d, mountPath: data}]\n")
    );
    expect(&y, &[]);
}

#[test]
fn sub_paths_are_relative_without_dotdot() {
    let y = format!(
        "{}  volumes: [{{name: d, emptyDir: {{}}}}]\n",
        container("    volumeMounts: [{name: d, mountPath: /data, subPath: ../x}]\n")
    );
    expect(
        &y,
        &[("spec.containers[0].volumeMounts[0].subPath", Invalid)],
    );
}

#[test]
fn bidirectional_propagation_needs_privileged() {
    let y = format!(
        "{}  volumes: [{{name: d, emptyDir: {{}}}}]\n",
        container(
            "    volumeMounts: [{name: d, mountPath: /data, mountPropagation: Bidirectional}]\n"
        )
    );
    expect(
        &y,
        &[(
            "spec.containers[0].volumeMounts[0].mountPropagation",
            Forbidden,
        )],
    );
    let y = format!(
        "{}  volumes: [{{name: d, emptyDir: {{}}}}]\n",
        container("    volumeMounts: [{name: d, mountPath: /data, mountPropagation: Sideways}]\n")
    );
    expect(
        &y,
        &[(
            "spec.containers[0].volumeMounts[0].mountPropagation",
            NotSupported,
        )],
    );
}

#[test]
fn probes_need_exactly_one_handler() {
    expect_msg(
        &container("    livenessProbe: {periodSeconds: 5}\n"),
        "spec.containers[0].livenessProbe: Required value: must specify a handler type",
    );
    expect_msg(
        &container("    livenessProbe: {exec: {command: [\"true\"]}, tcpSocket: {port: 80}}\n"),
        "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
    );
}

#[test]
fn liveness_and_startup_success_threshold_must_be_1() {
    expect_msg(
        &container("    livenessProbe: {tcpSocket: {port: 80}, successThreshold: 2}\n"),
        "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
    );
    expect(
        &container("    startupProbe: {tcpSocket: {port: 80}, successThreshold: 3}\n"),
        &[("spec.containers[0].startupProbe.successThreshold", Invalid)],
    );
    expect(
        &container("    readinessProbe: {tcpSocket: {port: 80}, successThreshold: 3}\n"),
        &[],
    );
}

#[test]
fn probe_timings_must_not_be_negative() {
    expect(
        &container("    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: -1, initialDelaySeconds: -2, failureThreshold: -3, timeoutSeconds: -4}\n"),
        &[
            ("spec.containers[0].readinessProbe.initialDelaySeconds", Invalid),
            ("spec.containers[0].readinessProbe.timeoutSeconds", Invalid),
            ("spec.containers[0].readinessProbe.periodSeconds", Invalid),
            ("spec.containers[0].readinessProbe.failureThreshold", Invalid),
        ],
    );
}

#[test]
fn probe_termination_grace_period_is_positive_and_not_for_readiness() {
    expect(
        &container(
            "    livenessProbe: {tcpSocket: {port: 80}, terminationGracePeriodSeconds: 0}\n",
        ),
        &[(
            "spec.containers[0].livenessProbe.terminationGracePeriodSeconds",
            Invalid,
        )],
    );
    expect_msg(
        &container("    readinessProbe: {tcpSocket: {port: 80}, terminationGracePeriodSeconds: 5}\n"),
        "spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: must not be set for readinessProbes",
    );
}

#[test]
fn probe_handlers_check_ports_schemes_commands_and_headers() {
    expect(
        &container("    livenessProbe: {httpGet: {port: 0}}\n"),
        &[("spec.containers[0].livenessProbe.httpGet.port", Invalid)],
    );
    expect(
        &container("    livenessProbe: {httpGet: {port: http, scheme: FTP}}\n"),
        &[(
            "spec.containers[0].livenessProbe.httpGet.scheme",
            NotSupported,
        )],
    );
    expect(
        &container(
            "    livenessProbe: {httpGet: {port: 80, httpHeaders: [{name: \"X Y\", value: z}]}}\n",
        ),
        &[(
            "spec.containers[0].livenessProbe.httpGet.httpHeaders[0].name",
            Invalid,
        )],
    );
    expect(
        &container("    livenessProbe: {tcpSocket: {port: Bad_Name}}\n"),
        &[("spec.containers[0].livenessProbe.tcpSocket.port", Invalid)],
    );
    expect(
        &container("    livenessProbe: {grpc: {port: 70000}}\n"),
        &[("spec.containers[0].livenessProbe.grpc.port", Invalid)],
    );
    expect(
        &container("    livenessProbe: {exec: {command: []}}\n"),
        &[("spec.containers[0].livenessProbe.exec.command", Required)],
    );
}

#[test]
fn lifecycle_handlers_need_exactly_one_action() {
    expect(
        &container("    lifecycle: {postStart: {}}\n"),
        &[("spec.containers[0].lifecycle.postStart", Required)],
    );
    expect(
        &container("    lifecycle: {preStop: {sleep: {seconds: 1}, exec: {command: [x]}}}\n"),
        &[("spec.containers[0].lifecycle.preStop.sleep", Forbidden)],
    );
}

#[test]
fn pre_stop_sleep_must_fit_in_the_grace_period() {
    expect_msg(
        &format!("{}  terminationGracePeriodSeconds: 2\n", container("    lifecycle: {preStop: {sleep: {seconds: 5}}}\n")),
        "spec.containers[0].lifecycle.preStop.sleep.seconds: Invalid value: 5: must be non-negative and less than terminationGracePeriodSeconds (2)",
    );
    expect(
        &container("    lifecycle: {preStop: {sleep: {seconds: 0}}}\n"),
        &[],
    );
}

#[test]
fn stop_signal_is_refused_not_ignored() {
    expect(
        &container("    lifecycle: {stopSignal: SIGUSR1}\n"),
        &[("spec.containers[0].lifecycle.stopSignal", Forbidden)],
    );
}

#[test]
fn restart_policy_must_be_known() {
    expect_msg(&spec("  restartPolicy: Sometimes\n"), "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"");
}

#[test]
fn init_container_restart_policy_may_only_be_always() {
    expect_msg(&spec("  initContainers: [{name: i, image: busybox, restartPolicy: Never}]\n"), "spec.initContainers[0].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"");
    expect(
        &spec("  initContainers: [{name: i, image: busybox, restartPolicy: Always}]\n"),
        &[],
    );
}

#[test]
fn app_containers_may_not_set_restart_policy() {
    expect(
        &container("    restartPolicy: Always\n"),
        &[("spec.containers[0].restartPolicy", Forbidden)],
    );
}

#[test]
fn regular_init_containers_may_not_have_probes_or_hooks() {
    expect(
        &spec("  initContainers: [{name: i, image: busybox, readinessProbe: {tcpSocket: {port: 80}}, lifecycle: {postStart: {exec: {command: [x]}}}}]\n"),
        &[("spec.initContainers[0].lifecycle", Forbidden), ("spec.initContainers[0].readinessProbe", Forbidden)],
    );
    // Sidecars may.
    expect(&spec("  initContainers: [{name: i, image: busybox, restartPolicy: Always, readinessProbe: {tcpSocket: {port: 80}}}]\n"), &[]);
}

#[test]
fn active_deadline_seconds_is_between_1_and_maxint32() {
    expect_msg(
        &spec("  activeDeadlineSeconds: 0\n"),
        "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
    );
    expect(
        &spec("  activeDeadlineSeconds: 3000000000\n"),
        &[("spec.activeDeadlineSeconds", Invalid)],
    );
}

#[test]
fn negative_termination_grace_period_is_accepted_as_1() {
    expect(&spec("  terminationGracePeriodSeconds: -1\n"), &[]);
}

#[test]
fn dns_policy_must_be_known_and_none_needs_a_config() {
    expect(
        &spec("  dnsPolicy: Custom\n"),
        &[("spec.dnsPolicy", NotSupported)],
    );
    expect(
        &spec("  dnsPolicy: None\n"),
        &[("spec.dnsConfig", Required)],
    );
}

#[test]
fn hostname_and_subdomain_are_dns_labels() {
    expect(
        &spec("  hostname: my.host\n  subdomain: Sub\n"),
        &[("spec.hostname", Invalid), ("spec.subdomain", Invalid)],
    );
}

#[test]
fn security_context_ids_are_in_range() {
    expect(
        &spec("  securityContext: {runAsUser: -1, runAsGroup: 4294967296, fsGroup: -5, supplementalGroups: [1, -2]}\n"),
        &[
            ("spec.securityContext.runAsUser", Invalid),
            ("spec.securityContext.runAsGroup", Invalid),
            ("spec.securityContext.fsGroup", Invalid),
            ("spec.securityContext.supplementalGroups[1]", Invalid),
        ],
    );
    expect(
        &container("    securityContext: {runAsUser: -1}\n"),
        &[("spec.containers[0].securityContext.runAsUser", Invalid)],
    );
}

#[test]
fn no_privilege_escalation_conflicts_with_privileged_and_sys_admin() {
    expect_msg(
        &container("    securityContext: {allowPrivilegeEscalation: false, privileged: true}\n"),
        "spec.containers[0].securityContext: Invalid value: \"\": cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
    );
    expect(&container("    securityContext: {allowPrivilegeEscalation: false, capabilities: {add: [SYS_ADMIN]}}\n"), &[("spec.containers[0].securityContext", Invalid)]);
}

#[test]
fn proc_mount_must_be_known() {
    expect(
        &container("    securityContext: {procMount: Weird}\n"),
        &[("spec.containers[0].securityContext.procMount", NotSupported)],
    );
}

#[test]
fn unmasked_proc_needs_a_user_namespace() {
    expect_msg(
        &container("    securityContext: {procMount: Unmasked}\n"),
        "spec.containers[0].securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`",
    );
    // With one, nodelet still says it cannot do it (no user namespaces yet).
    expect(
        &format!(
            "{}  hostUsers: false\n",
            container("    securityContext: {procMount: Unmasked}\n")
        ),
        &[("spec.containers[0].securityContext.procMount", Forbidden)],
    );
    expect(
        &container("    securityContext: {procMount: Default}\n"),
        &[],
    );
}

#[test]
fn seccomp_profiles_are_validated_as_the_api_server_does() {
    expect(
        &container("    securityContext: {seccompProfile: {type: Strict}}\n"),
        &[(
            "spec.containers[0].securityContext.seccompProfile.type",
            NotSupported,
        )],
    );
    expect(
        &container("    securityContext: {seccompProfile: {type: Localhost}}\n"),
        &[(
            "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            Required,
        )],
    );
    expect(
        &container("    securityContext: {seccompProfile: {type: Localhost, localhostProfile: ../etc/x.json}}\n"),
        &[("spec.containers[0].securityContext.seccompProfile.localhostProfile", Invalid)],
    );
    expect(
        &spec("  securityContext: {seccompProfile: {type: RuntimeDefault, localhostProfile: x.json}}\n"),
        &[("spec.securityContext.seccompProfile.localhostProfile", Invalid)],
    );
    expect(
        &spec("  securityContext: {seccompProfile: {type: Localhost, localhostProfile: profiles/block.json}}\n"),
        &[],
    );
}

#[test]
fn sysctl_names_are_valid_and_unique() {
    expect(&spec("  securityContext: {sysctls: [{name: \"net..x\", value: \"1\"}, {name: kernel.shm_rmid_forced, value: \"1\"}, {name: kernel/shm_rmid_forced, value: \"0\"}]}\n"), &[
        ("spec.securityContext.sysctls[0].name", Invalid),
        ("spec.securityContext.sysctls[2].name", Duplicate),
    ]);
}

#[test]
fn resource_quantities_parse_and_requests_fit_limits() {
    expect_msg(
        &container("    resources: {limits: {cpu: 500m}, requests: {cpu: \"1\"}}\n"),
        "spec.containers[0].resources.requests[cpu]: Invalid value: \"1\": must be less than or equal to cpu limit of 500m",
    );
    // The request defaulted from the limit is reported too, as the API server does.
    expect(
        &container("    resources: {limits: {memory: lots}}\n"),
        &[
            ("spec.containers[0].resources.limits[memory]", Invalid),
            ("spec.containers[0].resources.requests[memory]", Invalid),
        ],
    );
    expect_msg(
        &container("    resources: {requests: {cpu: 1.5x}}\n"),
        "spec.containers[0].resources.requests[cpu]: Invalid value: \"1.5x\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
    );
    expect(
        &container("    resources: {requests: {memory: \"-1\"}}\n"),
        &[("spec.containers[0].resources.requests[memory]", Invalid)],
    );
    expect(
        &container("    resources: {requests: {Memory: 1Gi}}\n"),
        &[("spec.containers[0].resources.requests[Memory]", Invalid)],
    );
    expect(
        &container("    resources: {requests: {example.com/widget: \"2\"}}\n"),
        &[],
    );
}

#[test]
fn readiness_gate_condition_types_are_qualified_names() {
    expect(
        &spec("  readinessGates: [{conditionType: \"bad type\"}]\n"),
        &[("spec.readinessGates[0].conditionType", Invalid)],
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let y = spec("  restartPolicy: Sometimes\n  activeDeadlineSeconds: 0\n  initContainers: [{name: app, image: \"\"}]\n");
    expect(
        &y,
        &[
            ("spec.initContainers[0].image", Required),
            ("spec.initContainers[0].name", Duplicate),
            ("spec.restartPolicy", NotSupported),
            ("spec.activeDeadlineSeconds", Invalid),
        ],
    );
}
