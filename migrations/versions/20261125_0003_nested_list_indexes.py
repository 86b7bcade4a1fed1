"""Indexes for the read API's nested lists and the external data changes list.

Each foreign key that a nested connection reads by (an organization's contacts and children, a
category's documents, a document's versions, a user's uploads, a role's and a project's grants, a
source's polling schedules) gets a `(tenant_id, fk)` index: the batched statement filters by both,
and the composite foreign key's checks use it too. `externalDataChanges` lists newest first.
See docs/decisions.md D13.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 13:36:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_contacts_tenant_id_organization_id"), "contacts", ["tenant_id", "organization_id"], unique=False
    )
    op.create_index(op.f("ix_documents_tenant_id_category_id"), "documents", ["tenant_id", "category_id"], unique=False)
    op.create_index(
        op.f("ix_documents_tenant_id_parent_document_id"),
        "documents",
        ["tenant_id", "parent_document_id"],
        unique=False,
    )
    op.create_index(op.f("ix_documents_tenant_id_uploaded_by"), "documents", ["tenant_id", "uploaded_by"], unique=False)
    op.create_index(
        op.f("ix_external_data_changes_tenant_id_change_timestamp_id"),
        "external_data_changes",
        ["tenant_id", sa.literal_column("change_timestamp DESC"), "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_organizations_tenant_id_parent_organization_id"),
        "organizations",
        ["tenant_id", "parent_organization_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_polling_configurations_tenant_id_external_source_id"),
        "polling_configurations",
        ["tenant_id", "external_source_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_user_roles_tenant_id_opportunity_project_id"),
        "user_roles",
        ["tenant_id", "opportunity_project_id"],
        unique=False,
    )
    op.create_index(op.f("ix_user_roles_tenant_id_role_id"), "user_roles", ["tenant_id", "role_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_user_roles_tenant_id_role_id"), table_name="user_roles")
    op.drop_index(op.f("ix_user_roles_tenant_id_opportunity_project_id"), table_name="user_roles")
    op.drop_index(op.f("ix_polling_configurations_tenant_id_external_source_id"), table_name="polling_configurations")
    op.drop_index(op.f("ix_organizations_tenant_id_parent_organization_id"), table_name="organizations")
    op.drop_index(op.f("ix_external_data_changes_tenant_id_change_timestamp_id"), table_name="external_data_changes")
    op.drop_index(op.f("ix_documents_tenant_id_uploaded_by"), table_name="documents")
    op.drop_index(op.f("ix_documents_tenant_id_parent_document_id"), table_name="documents")
    op.drop_index(op.f("ix_documents_tenant_id_category_id"), table_name="documents")
    op.drop_index(op.f("ix_contacts_tenant_id_organization_id"), table_name="contacts")
