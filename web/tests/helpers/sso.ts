// The test identity provider's users and the groups the single sign-on
// server maps to roles (the global setup starts both).
export const ssoGroups = { admin: "quarry-admins", viewer: "quarry-view" };

export const ssoUsers = {
  admin: { subject: "u-ada", email: "ada@example.com", groups: ["staff", ssoGroups.admin] },
  viewer: { subject: "u-vic", email: "vic@example.com", groups: [ssoGroups.viewer] },
  // In no group Quarry maps: refused.
  unmapped: { subject: "u-nina", email: "nina@example.com", groups: ["staff"] },
};

export type SSOUser = (typeof ssoUsers)[keyof typeof ssoUsers];

/** The button of the provider's sign-in page that signs in as u. */
export const providerButton = (u: SSOUser) => `${u.email} (groups ${u.groups.join(", ")})`;

/** The URL of the dashboard served by the server with single sign-on. */
export const ssoURL = (path = "/") => process.env.QUARRY_SSO_URL! + path;
