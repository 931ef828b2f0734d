-- Who manages what, beyond the API: the policy file owns what it declares (owner `file:user`,
-- `file:group`, `file:member`, `file:grant`, `file:provider`), and an identity provider owns the
-- group memberships it reported for a user at login (owner `idp:<provider>:<user>`, names are
-- groups). Every start and reload makes the store match the file, and the API refuses to change
-- what the file owns.
CREATE TABLE managed (
    owner TEXT NOT NULL,
    name  TEXT NOT NULL,
    PRIMARY KEY (owner, name)
);
