// Which credentials an S3 pull signs with: the credential alias's secret
// (JSON with accessKeyId and secretAccessKey, optionally sessionToken), else
// what the AWS SDK's default provider chain finds (environment variables,
// shared config and credentials files, web identity token / IRSA, container
// or instance metadata), else none: requests go unsigned, for a public
// bucket. The secret is read only here and never appears in a message.
import { ModelCacheError, quote } from "../../errors.js";

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** The alias's credentials; undefined (no alias): the default chain decides, see `S3Store.open`. */
export function s3Credentials(credential: { alias: string; secret: string } | undefined): S3Credentials | undefined {
  return credential ? parseSecret(credential.alias, credential.secret) : undefined;
}

/** What the default chain tried, for messages about access. */
export const DEFAULT_CHAIN =
  "the AWS default credential chain (environment variables, shared config and credentials files, web identity token, container or instance metadata)";

/**
 * Where the default chain found credentials, from the SDK's record of the
 * provider ($source), for messages about access: never the keys themselves.
 */
export function chainSource(found: object, env: NodeJS.ProcessEnv = process.env): string {
  const sources = Object.keys((found as { $source?: Record<string, unknown> }).$source ?? {});
  const has = (part: string) => sources.some((s) => s.includes(part));
  if (has("WEB_ID")) return `a web identity token (${env.AWS_WEB_IDENTITY_TOKEN_FILE ?? "AWS_WEB_IDENTITY_TOKEN_FILE"})`;
  if (has("ENV_VARS")) return "the environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";
  if (has("SSO")) return `SSO of profile '${env.AWS_PROFILE ?? "default"}'`;
  if (has("PROCESS")) return `the credential_process of profile '${env.AWS_PROFILE ?? "default"}'`;
  if (has("PROFILE")) return `profile '${env.AWS_PROFILE ?? "default"}' of the shared credentials and config files (${env.AWS_SHARED_CREDENTIALS_FILE ?? "~/.aws/credentials"}, ${env.AWS_CONFIG_FILE ?? "~/.aws/config"})`;
  if (has("IMDS")) return "the instance metadata service";
  if (has("HTTP")) return "the container credentials endpoint";
  return "the AWS default credential chain";
}

function parseSecret(alias: string, secret: string): S3Credentials {
  const refuse = () =>
    new ModelCacheError(
      "failed_precondition",
      `the secret of credential alias ${quote(alias)} is not S3 credentials: store JSON such as {"accessKeyId": "...", "secretAccessKey": "..."} (optionally "sessionToken") under that alias with PutSecret`,
    );
  let value: unknown;
  try {
    value = JSON.parse(secret);
  } catch {
    // the parser's message may quote the secret: only the alias is named
    throw refuse();
  }
  const { accessKeyId, secretAccessKey, sessionToken } = (value ?? {}) as Record<string, unknown>;
  if (typeof accessKeyId !== "string" || accessKeyId === "" || typeof secretAccessKey !== "string" || secretAccessKey === "") throw refuse();
  if (sessionToken !== undefined && typeof sessionToken !== "string") throw refuse();
  return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
}
